# The libtorch example (examples/text_dfm.cpp): a C++17 program that links libtorch, built by
# `make examples` when libtorch's headers and libraries are found. `make text_dfm` builds it,
# `make run-text-dfm` runs its --quick mode (CI), `make deps-torch` installs what it needs.
# Without libtorch both targets print how to get it and succeed.
# Debian packages it needs (not in DEB_PKGS: libtorch is optional and large): the C++ library,
# the corpus, and the Python binding the Python example's test uses.
TORCH_DEB_PKGS := libtorch-dev fortunes wamerican python3-torch

TORCH_INC  ?= /usr/include/torch/csrc/api/include
TORCH_LIBS ?= -ltorch -ltorch_cpu -lc10
TORCH_FOUND := $(and $(wildcard $(TORCH_INC)/torch/torch.h),$(filter /%,$(shell $(CXX) -print-file-name=libtorch.so 2>/dev/null)))
TORCH_SKIP_MSG := text_dfm: libtorch not found, example skipped (install: make deps-torch, or apt-get install $(TORCH_DEB_PKGS))
# torch's headers are -isystem: the example itself builds warning-free with these flags.
TORCH_CXXFLAGS := -std=c++17 -O2 -Iinclude -isystem $(TORCH_INC) -Wall -Wextra -Wshadow

_build/examples/text_dfm: examples/text_dfm.cpp include/dfm/dfm.hpp $(HDRS) lib/libdfm.so | _build/examples
	$(CXX) $(TORCH_CXXFLAGS) $< -o $@ -Llib -ldfm $(RPATH) $(TORCH_LIBS) -lpthread -lm

.PHONY: text_dfm run-text-dfm deps-torch
ifneq ($(TORCH_FOUND),)
text_dfm: all _build/examples/text_dfm
run-text-dfm: text_dfm
	./_build/examples/text_dfm --quick $(TEXT_ARGS)
else
text_dfm:
	@echo "$(TORCH_SKIP_MSG)"
run-text-dfm:
	@echo "$(TORCH_SKIP_MSG)"
endif

deps-torch:
	@sh tools/deps.sh $(TORCH_DEB_PKGS)

examples: text_dfm
