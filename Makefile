# libdfm — plain Makefile build. The same source list (src/sources.list) feeds meson.build.
# Targets: all (default), deps, check, demo, bench, examples, install, uninstall, clean.

VERSION := $(shell sed -n 's/^\#define DFM_VERSION_STRING "\(.*\)"/\1/p' include/dfm/common.h)
MAJOR   := $(word 1,$(subst ., ,$(VERSION)))
SONAME  := libdfm.so.$(MAJOR)

PREFIX     ?= /usr/local
LIBDIR     ?= $(PREFIX)/lib
INCLUDEDIR ?= $(PREFIX)/include
DESTDIR    ?=

CC      ?= cc
# The C++ compiler follows CC: clang (clang-14, /usr/bin/clang) pairs with clang++ (clang++-14,
# ...), any other CC with c++. An explicit CXX= wins.
ifeq ($(origin CXX),default)
CXX := $(if $(findstring clang,$(notdir $(CC))),$(if $(findstring /,$(CC)),$(dir $(CC)))$(subst clang,clang++,$(notdir $(CC))),c++)
endif
# Debian's interpreter carries python3-numpy/scipy; a python3 earlier on PATH may not.
PYTHON  ?= $(shell [ -x /usr/bin/python3 ] && echo /usr/bin/python3 || echo python3)
PKG_CONFIG ?= pkg-config

# Debian packages for the build, tests, examples and benchmarks (installed by `make deps`).
DEB_PKGS := build-essential libopenblas-dev check pkg-config meson ninja-build libpng-dev \
            wamerican python3 python3-numpy python3-scipy \
            python3-venv python3-pip python3-setuptools python3-wheel

# On a fresh machine the first make installs what the build needs (as root with apt-get), or
# prints the exact command and stops, before anything is configured.
ifeq ($(filter deps clean,$(MAKECMDGOALS)),)
ifneq ($(shell $(PKG_CONFIG) --exists check 2>/dev/null && ($(PKG_CONFIG) --exists openblas || $(PKG_CONFIG) --exists cblas || $(PKG_CONFIG) --exists blas) 2>/dev/null && echo ok),ok)
$(info libdfm: build dependencies missing, running the deps step)
ifneq ($(shell sh tools/deps.sh $(DEB_PKGS) >&2 && echo ok),ok)
$(error missing build dependencies (see the command above))
endif
endif
endif

# CBLAS through pkg-config: OpenBLAS preferred, reference CBLAS accepted.
BLAS_PC := $(firstword $(foreach p,openblas cblas blas,$(shell $(PKG_CONFIG) --exists $(p) 2>/dev/null && echo $(p))))
BLAS_CFLAGS := $(if $(BLAS_PC),$(shell $(PKG_CONFIG) --cflags $(BLAS_PC)))
BLAS_LIBS   := $(if $(BLAS_PC),$(shell $(PKG_CONFIG) --libs $(BLAS_PC)))
CHECK_CFLAGS := $(shell $(PKG_CONFIG) --cflags check 2>/dev/null)
CHECK_LIBS   := $(shell $(PKG_CONFIG) --libs check 2>/dev/null)

# Sources: one folder per layer or module (docs/architecture.md); includes name the folder.
SRCS := $(addprefix src/,$(shell cat src/sources.list))

WARN    := -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wpointer-arith -Wvla
OPT     ?= -O2
CFLAGS  ?= $(OPT) -g
# WERROR=1 turns warnings in the library's own sources into errors (CI does this).
LIB_WERROR := $(if $(WERROR),-Werror)
# No fused multiply-add contraction: GCC in ISO C mode already leaves a * b + c as two roundings,
# clang contracts by default where the target has FMA (aarch64, x86-64-v3 and up); results must
# not depend on the compiler or the architecture (docs/promises.md).
FP_FLAGS   := -ffp-contract=off
LIB_CFLAGS := $(LIB_WERROR) $(FP_FLAGS) -std=c99 -D_POSIX_C_SOURCE=200809L -fPIC -fvisibility=hidden -DDFM_BUILDING \
              -Iinclude -Isrc $(WARN) $(BLAS_CFLAGS) $(CFLAGS)
LIB_LIBS   := $(BLAS_LIBS) -lpthread -lm

OBJS := $(patsubst src/%.c,_build/obj/%.o,$(SRCS))
# Everything compiled is rebuilt when the compilers or flags change (`make CC=clang check` after
# `make check`): _build/toolchain holds them and is rewritten only when they differ.
TOOLCHAIN := $(CC) | $(CXX) | $(filter-out -Werror,$(LIB_CFLAGS)) | $(LDFLAGS)
TC_STAMP  := _build/toolchain
$(TC_STAMP): FORCE
	@mkdir -p $(@D)
	@[ "$$(cat $@ 2>/dev/null)" = '$(TOOLCHAIN)' ] || printf '%s\n' '$(TOOLCHAIN)' > $@
.PHONY: FORCE
FORCE:
HDRS := $(wildcard include/dfm/*.h) $(wildcard src/*/*.h)

SHLIB := lib/libdfm.so.$(VERSION)
STLIB := lib/libdfm.a

TESTS     := $(shell cat tests/tests.list)
TEST_BINS := $(addprefix _build/tests/,$(TESTS))
TEST_CFLAGS := $(FP_FLAGS) -std=c99 -D_POSIX_C_SOURCE=200809L -Iinclude -Itests $(WARN) -Wno-missing-prototypes \
               $(CHECK_CFLAGS) $(BLAS_CFLAGS) $(CFLAGS)
RPATH := -Wl,-rpath,$(CURDIR)/lib

EXAMPLES := $(shell cat examples/examples.list 2>/dev/null)
EX_BINS  := $(addprefix _build/examples/,$(EXAMPLES))
PNG_CFLAGS := $(shell $(PKG_CONFIG) --cflags libpng 2>/dev/null)
PNG_LIBS   := $(shell $(PKG_CONFIG) --libs libpng 2>/dev/null)
EX_CFLAGS := -std=c99 -D_POSIX_C_SOURCE=200809L -Iinclude -Iexamples $(WARN) -Wno-missing-prototypes \
             $(BLAS_CFLAGS) $(PNG_CFLAGS) $(CFLAGS)

.PHONY: all deps check demo bench examples install uninstall clean
.DEFAULT_GOAL := all

all: $(SHLIB) lib/$(SONAME) lib/libdfm.so $(STLIB) dfm.pc dfm-static.pc

# ---- dependencies ----
deps:
	@sh tools/deps.sh $(DEB_PKGS)

_build/obj/%.o: src/%.c $(HDRS) $(TC_STAMP)
	@mkdir -p $(@D)
	$(CC) $(LIB_CFLAGS) -c $< -o $@

_build/obj _build/tests _build/examples _build/bench lib:
	@mkdir -p $@

$(SHLIB): $(OBJS) lib/dfm.map | lib
	$(CC) -shared -o $@ $(OBJS) -Wl,-soname,$(SONAME) -Wl,--version-script=lib/dfm.map \
	  -Wl,--no-undefined $(LDFLAGS) $(LIB_LIBS)

lib/$(SONAME): $(SHLIB)
	ln -sf libdfm.so.$(VERSION) $@
lib/libdfm.so: lib/$(SONAME)
	ln -sf $(SONAME) $@

$(STLIB): $(OBJS) | lib
	rm -f $@
	ar rcs $@ $(OBJS)

# pkg-config files (docs/build.md): dfm.pc for the shared library, dfm-static.pc for a static
# link of libdfm.a. libdir and includedir are written relative to ${prefix} when they lie under
# it, so --define-variable=prefix=... relocates an installed tree. The CBLAS link flags are
# written out (Libs.private / Libs), not required as a package: a Requires.private would put
# OpenBLAS's include path into every shared consumer's --cflags.
PC_LIBDIR     := $(patsubst $(PREFIX)/%,$${prefix}/%,$(LIBDIR))
PC_INCLUDEDIR := $(patsubst $(PREFIX)/%,$${prefix}/%,$(INCLUDEDIR))
PC_SED = sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@LIBDIR@|$(PC_LIBDIR)|' -e 's|@INCLUDEDIR@|$(PC_INCLUDEDIR)|' \
	    -e 's|@VERSION@|$(VERSION)|' -e 's|@BLAS_LIBS@|$(strip $(BLAS_LIBS))|'
dfm.pc dfm-static.pc: %.pc: %.pc.in include/dfm/common.h Makefile
	$(PC_SED) $< > $@

# ---- tests ----
_build/tests/%: tests/%.c tests/testutil.h $(HDRS) $(wildcard examples/*.h) lib/libdfm.so $(TC_STAMP) | _build/tests
	$(CC) $(TEST_CFLAGS) $< -o $@ -Llib -ldfm $(RPATH) $(CHECK_LIBS) $(BLAS_LIBS) -lpthread -lm

# The discrete samplers' suites share their exact targets.
_build/tests/test_discrete _build/tests/test_infer: tests/ds_target.h

# test_kernels checks internal kernels: it links the static library, where they are visible.
_build/tests/test_kernels: tests/test_kernels.c tests/testutil.h $(HDRS) $(STLIB) $(TC_STAMP) | _build/tests
	$(CC) $(TEST_CFLAGS) $< -o $@ $(STLIB) $(CHECK_LIBS) $(BLAS_LIBS) -lpthread -lm

# DFM_OBJ_DIR: tests/layers.sh also checks that no two source files call each other in a loop.
# CHECK_EXTRA_BINS: further suite binaries from mk/*.mk (each also a prerequisite of check there).
check: all $(TEST_BINS)
	@CC="$(CC)" CXX="$(CXX)" PYTHON="$(PYTHON)" DFM_OBJ_DIR="$(CURDIR)/_build/obj" \
	  sh tests/run-all.sh $(TEST_BINS) $(CHECK_EXTRA_BINS)

# ---- examples ----
_build/examples/%: examples/%.c $(wildcard examples/*.h) $(HDRS) lib/libdfm.so $(TC_STAMP) | _build/examples
	$(CC) $(EX_CFLAGS) $< -o $@ -Llib -ldfm $(RPATH) $(BLAS_LIBS) $(PNG_LIBS) -lpthread -lm

examples: all $(EX_BINS)

DEMO ?= $(shell head -n 1 examples/examples.list)
demo: deps all _build/examples/$(DEMO)
	./_build/examples/$(DEMO) $(DEMO_ARGS)

# ---- benchmarks ----
_build/bench/%: bench/%.c $(HDRS) lib/libdfm.so $(TC_STAMP) | _build/bench
	$(CC) $(EX_CFLAGS) -Ibench $< -o $@ -Llib -ldfm $(RPATH) $(BLAS_LIBS) -lpthread -lm

BENCHES := $(patsubst bench/%.c,%,$(wildcard bench/bench_*.c))
bench: all $(addprefix _build/bench/,$(BENCHES))
	@for b in $(BENCHES); do ./_build/bench/$$b || exit 1; done

# ---- install ----
install: all
	install -d $(DESTDIR)$(LIBDIR) $(DESTDIR)$(INCLUDEDIR)/dfm $(DESTDIR)$(LIBDIR)/pkgconfig
	install -m 644 include/dfm/*.h include/dfm/*.hpp $(DESTDIR)$(INCLUDEDIR)/dfm/
	install -m 755 $(SHLIB) $(DESTDIR)$(LIBDIR)/
	ln -sf libdfm.so.$(VERSION) $(DESTDIR)$(LIBDIR)/$(SONAME)
	ln -sf $(SONAME) $(DESTDIR)$(LIBDIR)/libdfm.so
	install -m 644 $(STLIB) $(DESTDIR)$(LIBDIR)/
	$(PC_SED) dfm.pc.in > $(DESTDIR)$(LIBDIR)/pkgconfig/dfm.pc
	$(PC_SED) dfm-static.pc.in > $(DESTDIR)$(LIBDIR)/pkgconfig/dfm-static.pc

uninstall:
	rm -rf $(DESTDIR)$(INCLUDEDIR)/dfm
	rm -f $(DESTDIR)$(LIBDIR)/libdfm.so* $(DESTDIR)$(LIBDIR)/libdfm.a
	rm -f $(DESTDIR)$(LIBDIR)/pkgconfig/dfm.pc $(DESTDIR)$(LIBDIR)/pkgconfig/dfm-static.pc

clean:
	rm -rf _build lib/libdfm.so* lib/libdfm.a dfm.pc dfm-static.pc

# Extra targets (sanitizers, valgrind, fuzzing, ABI baseline) live in mk/*.mk.
-include $(wildcard mk/*.mk)
