# C++ examples: examples/*.cpp are compiled with $(CXX) -std=c++11 against the header-only
# wrapper include/dfm/dfm.hpp, linked with -ldfm, and run once by `make examples`.
# text_dfm.cpp needs libtorch and C++17: mk/examples_torch.mk builds it.
CXX_EX_SRCS  := $(filter-out examples/text_dfm.cpp,$(wildcard examples/*.cpp))
CXX_EX_BINS  := $(patsubst examples/%.cpp,_build/examples/%,$(CXX_EX_SRCS))
CXX_EX_FLAGS := -std=c++11 -Iinclude -Wall -Wextra -Wshadow -pedantic $(CFLAGS)

_build/examples/%: examples/%.cpp include/dfm/dfm.hpp $(HDRS) lib/libdfm.so $(TC_STAMP) | _build/examples
	$(CXX) $(CXX_EX_FLAGS) $< -o $@ -Llib -ldfm $(RPATH) -lpthread -lm

.PHONY: examples-cxx
examples-cxx: all $(CXX_EX_BINS)
	@for b in $(CXX_EX_BINS); do ./$$b || exit 1; done

examples: examples-cxx
