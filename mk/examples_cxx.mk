# C++ examples: examples/*.cpp are compiled with $(CXX) -std=c++11 against the header-only
# wrapper include/dfm/dfm.hpp, linked with -ldfm, and run once by `make examples`.
CXX_EX_SRCS  := $(wildcard examples/*.cpp)
CXX_EX_BINS  := $(patsubst examples/%.cpp,_build/examples/%,$(CXX_EX_SRCS))
CXX_EX_FLAGS := -std=c++11 -Iinclude -Wall -Wextra -Wshadow -pedantic $(CFLAGS)

_build/examples/%: examples/%.cpp include/dfm/dfm.hpp $(HDRS) lib/libdfm.so | _build/examples
	$(CXX) $(CXX_EX_FLAGS) $< -o $@ -Llib -ldfm $(RPATH) -lpthread -lm

.PHONY: examples-cxx
examples-cxx: all $(CXX_EX_BINS)
	@for b in $(CXX_EX_BINS); do ./$$b || exit 1; done

examples: examples-cxx

# The Makefile's install copies include/dfm/*.h; the C++ wrapper header goes with them.
.PHONY: install-hpp
install-hpp:
	install -d $(DESTDIR)$(INCLUDEDIR)/dfm
	install -m 644 include/dfm/dfm.hpp $(DESTDIR)$(INCLUDEDIR)/dfm/

install: install-hpp
