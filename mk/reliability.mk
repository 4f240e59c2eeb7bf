# libdfm reliability targets (docs/reliability.md). Included by the main Makefile, whose
# variables (SRCS, HDRS, LIB_CFLAGS, TEST_CFLAGS, TESTS, TEST_BINS, CHECK_LIBS, BLAS_LIBS ...) are
# reused here. Every instrumented build lives in its own directory under _build/ and links its own
# static copy of the library, so none of these targets touches the normal build in lib/.
#
#   make check-asan       whole Check suite under AddressSanitizer + UndefinedBehaviorSanitizer
#   make check-valgrind   the normal test binaries under valgrind memcheck
#   make check-tsan       the concurrency suites (TSAN_TESTS) under ThreadSanitizer
#   make fuzz FUZZ_SECONDS=60   libFuzzer on every tests/fuzz/fuzz_*.c harness for that long each
#   make fuzz-smoke       every harness for FUZZ_SMOKE_SECONDS (CI)
#   make fuzz-regress     every harness over its committed seed corpus once
#   make fuzz-corpus-update   merge new interesting inputs found by `make fuzz` into the seeds
#   make abi-dump         write the baseline lib/dfm.abi (abidw) from lib/libdfm.so.0
#   make abi-check        abidiff against lib/dfm.abi + exported symbols vs lib/dfm.map
#   make check-hygiene    the sources never abort/print/exit nor allocate outside dfm_allocator,
#                         and no function is longer than 80 lines
#   make reliability      all of the above checks (what CI runs), deps-reliability installs tools

.PHONY: check-asan check-valgrind check-tsan fuzz fuzz-smoke fuzz-regress fuzz-corpus-update \
        fuzz-build abi-dump abi-check check-hygiene reliability deps-reliability

# Debian packages these targets need on top of DEB_PKGS (the lead adds them to the deps list).
REL_DEB_PKGS := clang libclang-rt-14-dev llvm valgrind abigail-tools

deps-reliability:
	@sh tools/deps.sh $(DEB_PKGS) $(REL_DEB_PKGS)

# Compilers: clang for every sanitizer build (libFuzzer and TSan need it; one compiler keeps the
# reports consistent). Override with e.g. `make check-asan SAN_CC=gcc`.
SAN_CC   ?= clang
FUZZ_CC  ?= clang
SAN_BASE := -g -fno-omit-frame-pointer -DDFM_NO_CLONES
ASAN_FLAGS := $(SAN_BASE) -fsanitize=address,undefined -fno-sanitize-recover=all
TSAN_FLAGS := $(SAN_BASE) -fsanitize=thread
FUZZ_LIB_FLAGS := $(SAN_BASE) -fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=all
FUZZ_EXE_FLAGS := $(SAN_BASE) -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all

# Sanitizer runtime options: stop at the first report, leak detection on.
ASAN_ENV := ASAN_OPTIONS=detect_leaks=1:allocator_may_return_null=1:halt_on_error=1:abort_on_error=0:detect_stack_use_after_return=1:strict_string_checks=1:check_initialization_order=1 \
            UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 LSAN_OPTIONS=report_objects=1 CK_FORK=no
# Test-size knob (tests/testutil.h, docs/reliability.md): the statistical suites divide their
# sample counts by DFM_TEST_SCALE under the instrumented runs; bounds follow the counts drawn.
# make check runs at full size (scale 1). OpenBLAS (test_mlp) runs single-threaded: its spinning
# worker threads cost ~5x under valgrind's serialised scheduler.
ASAN_TEST_SCALE ?= 4
VALGRIND_TEST_SCALE ?= 20
TSAN_TEST_SCALE ?= 10
ASAN_ENV += DFM_TEST_SCALE=$(ASAN_TEST_SCALE) OPENBLAS_NUM_THREADS=1
TSAN_ENV := TSAN_OPTIONS=halt_on_error=1:allocator_may_return_null=1:second_deadlock_stack=1 CK_FORK=no \
            DFM_TEST_SCALE=$(TSAN_TEST_SCALE) OPENBLAS_NUM_THREADS=1
VALGRIND ?= valgrind
VALGRIND_FLAGS := --error-exitcode=1 --leak-check=full --show-leak-kinds=definite,indirect,possible \
                  --errors-for-leak-kinds=definite,indirect,possible --track-fds=no -q
VALGRIND_ENV := CK_FORK=no DFM_TEST_SCALE=$(VALGRIND_TEST_SCALE) OPENBLAS_NUM_THREADS=1

# Suites run under ThreadSanitizer: the concurrency suite, the fault scenarios (failures inside
# worker threads) and the module suites that run samplers / losses with DFM_OPT_THREADS = 2;
# modules append theirs (TSAN_TESTS += ...).
TSAN_TESTS += test_threads test_faults test_discrete test_discrete_loss test_continuous test_ctmc test_misuse

# Suites start longest first so that the two runners (REL_JOBS) finish together.
REL_SLOW := test_gm test_infer test_discrete test_ctmc test_continuous test_mlp test_faults test_rng test_discrete_loss
rel_order = $(foreach s,$(REL_SLOW),$(filter %/$(s),$(1))) $(filter-out $(addprefix %/,$(REL_SLOW)),$(1))

# Headers the Check suites may include besides testutil.h (fault scenarios of the modules).
REL_TEST_HDRS := tests/testutil.h $(wildcard tests/fault/*.h)
_build/tests/test_faults: $(wildcard tests/fault/*.h)

# ---- instrumented static copies of the library: _build/<variant>/libdfm.a ----
# $(1) variant, $(2) compiler, $(3) extra flags.
define DFM_VARIANT
_build/$(1)/obj/%.o: src/%.c $$(HDRS)
	@mkdir -p $$(@D)
	$(2) $$(LIB_CFLAGS) $(3) -c $$< -o $$@
_build/$(1)/libdfm.a: $$(patsubst src/%.c,_build/$(1)/obj/%.o,$$(SRCS))
	@rm -f $$@
	ar rcs $$@ $$^
endef
$(eval $(call DFM_VARIANT,asan,$(SAN_CC),$(ASAN_FLAGS)))
$(eval $(call DFM_VARIANT,tsan,$(SAN_CC),$(TSAN_FLAGS)))
$(eval $(call DFM_VARIANT,fuzz,$(FUZZ_CC),$(FUZZ_LIB_FLAGS)))

REL_LINK := $(CHECK_LIBS) $(BLAS_LIBS) -lpthread -lm

# ---- AddressSanitizer + UndefinedBehaviorSanitizer over the whole Check suite ----
ASAN_BINS := $(addprefix _build/asan/tests/,$(TESTS))
_build/asan/tests/%: tests/%.c $(REL_TEST_HDRS) $(HDRS) _build/asan/libdfm.a
	@mkdir -p $(@D)
	$(SAN_CC) $(TEST_CFLAGS) $(ASAN_FLAGS) $< -o $@ _build/asan/libdfm.a $(REL_LINK)

check-asan: $(ASAN_BINS)
	@env $(ASAN_ENV) sh tools/run-suites.sh asan "" $(call rel_order,$(ASAN_BINS))

# ---- valgrind memcheck over the normal test binaries ----
# VALGRIND_TESTS picks suites (CI: the misuse and fault suites); every suite by default.
VALGRIND_TESTS ?= $(TESTS)
VALGRIND_BINS = $(addprefix _build/tests/,$(VALGRIND_TESTS))
check-valgrind: all $(VALGRIND_BINS)
	@command -v $(VALGRIND) >/dev/null || { echo "valgrind missing: make deps-reliability"; exit 1; }
	@env $(VALGRIND_ENV) sh tools/run-suites.sh valgrind "$(VALGRIND) $(VALGRIND_FLAGS)" $(call rel_order,$(VALGRIND_BINS))

# ---- ThreadSanitizer over the concurrency suites ----
TSAN_BINS := $(addprefix _build/tsan/tests/,$(TSAN_TESTS))
_build/tsan/tests/%: tests/%.c $(REL_TEST_HDRS) $(HDRS) _build/tsan/libdfm.a
	@mkdir -p $(@D)
	$(SAN_CC) $(TEST_CFLAGS) $(TSAN_FLAGS) $< -o $@ _build/tsan/libdfm.a $(REL_LINK)

check-tsan: $(TSAN_BINS)
	@env $(TSAN_ENV) sh tools/run-suites.sh tsan "" $(call rel_order,$(TSAN_BINS))

# ---- libFuzzer ----
# Harnesses: tests/fuzz/fuzz_<name>.c (LLVMFuzzerTestOneInput); seeds: tests/fuzz/corpus/<name>/.
# New inputs go to _build/fuzz/corpus/<name>/ (the committed seeds are only read), crashes to
# _build/fuzz/artifacts/. Harnesses may include the library's private headers (-Isrc): they link
# the static instrumented copy.
FUZZ_SECONDS ?= 60
FUZZ_SMOKE_SECONDS ?= 20
FUZZ_FLAGS ?= -timeout=10 -rss_limit_mb=2048 -max_len=4096 -print_final_stats=1
FUZZ_HARNESSES := $(patsubst tests/fuzz/fuzz_%.c,%,$(wildcard tests/fuzz/fuzz_*.c))
FUZZ_BINS := $(addprefix _build/fuzz/bin/fuzz_,$(FUZZ_HARNESSES))

_build/fuzz/bin/fuzz_%: tests/fuzz/fuzz_%.c $(wildcard tests/fuzz/*.h) $(HDRS) _build/fuzz/libdfm.a
	@mkdir -p $(@D)
	$(FUZZ_CC) -std=c99 -D_POSIX_C_SOURCE=200809L -Iinclude -Isrc -Itests/fuzz $(WARN) \
	  -Wno-missing-prototypes $(BLAS_CFLAGS) -O1 $(FUZZ_EXE_FLAGS) $< -o $@ \
	  _build/fuzz/libdfm.a $(BLAS_LIBS) -lpthread -lm

fuzz-build: $(FUZZ_BINS)

fuzz: $(FUZZ_BINS)
	@sh tools/run-fuzz.sh "$(FUZZ_SECONDS)" "$(FUZZ_FLAGS)" $(FUZZ_HARNESSES)

# The CI smoke run allows 60 s per input (a hang still fails, a valid but slow input does not)
# and uses a fixed seed, so that it explores the same inputs on every run.
FUZZ_SMOKE_FLAGS ?= $(subst -timeout=10,-timeout=60,$(FUZZ_FLAGS)) -seed=1
fuzz-smoke: $(FUZZ_BINS)
	@sh tools/run-fuzz.sh "$(FUZZ_SMOKE_SECONDS)" "$(FUZZ_SMOKE_FLAGS)" $(FUZZ_HARNESSES)

fuzz-regress: $(FUZZ_BINS)
	@sh tools/run-fuzz.sh 0 "$(FUZZ_FLAGS)" $(FUZZ_HARNESSES)

fuzz-corpus-update: $(FUZZ_BINS)
	@for h in $(FUZZ_HARNESSES); do mkdir -p tests/fuzz/corpus/$$h; \
	  ./_build/fuzz/bin/fuzz_$$h -merge=1 tests/fuzz/corpus/$$h _build/fuzz/corpus/$$h \
	  2>&1 | grep -E 'MERGE-OUTER: [0-9]+ new files' || true; done

# ---- ABI baseline (abigail-tools) ----
# The baseline describes the public surface only: types reachable from include/dfm/*.h, symbols
# of the shared object (all dfm_ and versioned by lib/dfm.map), no locations or build paths.
ABIDW_FLAGS := --headers-dir include/dfm --drop-private-types --drop-undefined-syms \
               --no-corpus-path --no-comp-dir-path --no-show-locs

abi-dump: all
	abidw $(ABIDW_FLAGS) --out-file lib/dfm.abi lib/$(SONAME)
	@echo "abi-dump: lib/dfm.abi written from lib/$(SONAME)"

abi-check: all
	@mkdir -p _build/abi
	@sh tools/abi-check.sh lib/dfm.abi lib/$(SONAME) "$(ABIDW_FLAGS)"

# ---- source hygiene ----
check-hygiene:
	@sh tools/src-hygiene.sh src
	@sh tools/src-layers.sh src

# ---- everything CI runs ----
reliability:
	$(MAKE) check-hygiene
	$(MAKE) check-asan
	$(MAKE) check-valgrind
	$(MAKE) check-tsan
	$(MAKE) fuzz-smoke
	$(MAKE) abi-check
