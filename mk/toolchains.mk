# libdfm toolchain targets (docs/build.md). Included by the main Makefile, whose variables (SRCS,
# HDRS, LIB_CFLAGS, TEST_CFLAGS, BLAS_CFLAGS, CHECK_CFLAGS, TESTS, TC_STAMP ...) are reused here.
#
#   make check          also runs the digest suite against a copy of the library built with
#                       -DDFM_NO_CLONES (_build/portable/): the portable kernels must give the
#                       samples the AVX ones give (tests/digests.h)
#   make check-aarch64  cross-builds the library and every Check suite for arm64 with
#                       $(AARCH64_CC) and Debian's arm64 multiarch packages (_build/aarch64/, the
#                       suites link the static library) and runs them under qemu-user
#   make check-aarch64-quick   the same for AARCH64_QUICK_TESTS (CI)
#   make deps-cross     installs what check-aarch64 needs (adds the arm64 dpkg architecture)
#   make deps-clang     installs clang, for `make CC=clang check`

.PHONY: check-aarch64 check-aarch64-quick deps-cross deps-clang

# ---- the portable kernels on this machine ----
PORTABLE_OBJS := $(patsubst src/%.c,_build/portable/obj/%.o,$(SRCS))

_build/portable/obj/%.o: src/%.c $(HDRS) $(TC_STAMP)
	@mkdir -p $(@D)
	$(CC) $(LIB_CFLAGS) -DDFM_NO_CLONES -c $< -o $@

_build/portable/libdfm.a: $(PORTABLE_OBJS)
	@rm -f $@
	ar rcs $@ $^

_build/tests/test_digest: tests/digests.h
_build/tests/test_digest_portable: tests/test_digest.c tests/digests.h tests/testutil.h $(HDRS) \
                                   _build/portable/libdfm.a $(TC_STAMP) | _build/tests
	$(CC) $(TEST_CFLAGS) $< -o $@ _build/portable/libdfm.a $(CHECK_LIBS) $(BLAS_LIBS) -lpthread -lm

CHECK_EXTRA_BINS += _build/tests/test_digest_portable
check: _build/tests/test_digest_portable

# ---- clang ----
CLANG_DEB_PKGS := clang

deps-clang:
	@sh tools/deps.sh $(CLANG_DEB_PKGS)

# ---- aarch64: cross build, Check suites under qemu-user ----
AARCH64_CC   ?= aarch64-linux-gnu-gcc
QEMU_AARCH64 ?= qemu-aarch64
# The suites run with the arm64 multiarch C library (libc6:arm64, which the arm64 OpenBLAS and
# Check packages pull in): qemu-aarch64 without -L finds its loader at /lib/ld-linux-aarch64.so.1.
# Not -L /usr/aarch64-linux-gnu: that loader (libc6-arm64-cross, Debian 12: 2.36-8cross1) then
# loads the multiarch libc.so.6 (2.36-9+deb12u...), and the mismatched pair hangs in the first
# pthread_create. QEMU_AARCH64_FLAGS adds options (e.g. -L DIR on a system without multiarch).
QEMU_AARCH64_FLAGS ?=
AARCH64_MULTIARCH ?= /usr/lib/aarch64-linux-gnu
CROSS_DEB_PKGS := gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user \
                  libopenblas-dev:arm64 check:arm64 libsubunit-dev:arm64

# pkg-config answers for arm64 from the multiarch .pc files (evaluated once, when first used).
A64_PC = PKG_CONFIG_LIBDIR=$(AARCH64_MULTIARCH)/pkgconfig:/usr/share/pkgconfig $(PKG_CONFIG)
A64_BLAS_CFLAGS  = $(eval A64_BLAS_CFLAGS := $$(shell $$(A64_PC) --cflags openblas))$(A64_BLAS_CFLAGS)
A64_BLAS_LIBS    = $(eval A64_BLAS_LIBS := $$(shell $$(A64_PC) --libs openblas))$(A64_BLAS_LIBS)
A64_CHECK_CFLAGS = $(eval A64_CHECK_CFLAGS := $$(shell $$(A64_PC) --cflags check))$(A64_CHECK_CFLAGS)
A64_CHECK_LIBS   = $(eval A64_CHECK_LIBS := $$(shell $$(A64_PC) --libs check))$(A64_CHECK_LIBS)
# The host's flags with the host's include paths swapped for the arm64 ones.
A64_LIB_CFLAGS  = $(filter-out $(BLAS_CFLAGS),$(LIB_CFLAGS)) $(A64_BLAS_CFLAGS)
A64_TEST_CFLAGS = $(filter-out $(BLAS_CFLAGS) $(CHECK_CFLAGS),$(TEST_CFLAGS)) $(A64_CHECK_CFLAGS) $(A64_BLAS_CFLAGS)

A64_OBJS  := $(patsubst src/%.c,_build/aarch64/obj/%.o,$(SRCS))
AARCH64_TESTS ?= $(TESTS)
# CI's subset (check-aarch64-quick): what depends on the architecture, without the four long
# statistical suites (test_discrete, test_ctmc, test_continuous, test_gm: 91% of the
# emulated time). Those measure the math against exact targets; on aarch64 the math runs the
# same portable kernels as test_digest_portable on x86-64, and test_digest checks that the
# samples they produce are the x86-64 ones bit for bit.
AARCH64_QUICK_TESTS := test_digest test_kernels test_rng test_core test_mlp test_threads \
                       test_faults test_misuse test_regress test_discrete_loss
A64_TESTS := $(AARCH64_TESTS)
A64_BINS  := $(addprefix _build/aarch64/tests/,$(A64_TESTS))

# Objects are rebuilt when the cross compiler or the flags change, as the host's are.
A64_TOOLCHAIN = $(AARCH64_CC) | $(filter-out -Werror,$(A64_LIB_CFLAGS))
_build/aarch64/toolchain: FORCE
	@mkdir -p $(@D)
	@[ "$$(cat $@ 2>/dev/null)" = '$(A64_TOOLCHAIN)' ] || printf '%s\n' '$(A64_TOOLCHAIN)' > $@

_build/aarch64/obj/%.o: src/%.c $(HDRS) _build/aarch64/toolchain
	@mkdir -p $(@D)
	$(AARCH64_CC) $(A64_LIB_CFLAGS) -c $< -o $@

_build/aarch64/libdfm.a: $(A64_OBJS)
	@rm -f $@
	ar rcs $@ $^

_build/aarch64/tests/%: tests/%.c tests/testutil.h tests/digests.h $(wildcard tests/fault/*.h) \
                        $(wildcard examples/*.h) $(HDRS) _build/aarch64/libdfm.a
	@mkdir -p $(@D)
	$(AARCH64_CC) $(A64_TEST_CFLAGS) $< -o $@ _build/aarch64/libdfm.a $(A64_CHECK_LIBS) \
	  $(A64_BLAS_LIBS) -lpthread -lm

# OpenBLAS's thread pool hangs at start-up under qemu-user: one thread. Emulation runs 10 to 30
# times slower than native: the statistical suites draw 1/AARCH64_TEST_SCALE of their samples
# (tests/testutil.h; bounds follow the counts drawn; the digest and kernel suites do not scale)
# and Check's per-test timeouts are stretched.
AARCH64_TEST_SCALE ?= 10
A64_ENV := -u QEMU_LD_PREFIX OPENBLAS_NUM_THREADS=1 CK_TIMEOUT_MULTIPLIER=10 \
           DFM_TEST_SCALE=$(AARCH64_TEST_SCALE)

check-aarch64: $(A64_BINS)
	@command -v $(QEMU_AARCH64) >/dev/null || { echo "$(QEMU_AARCH64) missing: make deps-cross"; exit 1; }
	@env $(A64_ENV) sh tools/run-suites.sh aarch64 "$(QEMU_AARCH64) $(QEMU_AARCH64_FLAGS)" \
	  $(call rel_order,$(A64_BINS))

check-aarch64-quick:
	@$(MAKE) --no-print-directory check-aarch64 AARCH64_TESTS="$(filter $(AARCH64_QUICK_TESTS),$(TESTS))"

deps-cross:
	@sh tools/deps.sh $(CROSS_DEB_PKGS)
