# The MPI example (examples/distributed.c): built with mpicc, not listed in examples/examples.list
# (the generic example rule uses $(CC)). `make distributed` builds it, `make run-distributed`
# runs it on MPI_NP processes. Without mpicc both targets print how to get it and succeed.
# Debian packages it needs (not in DEB_PKGS: MPI is optional):
MPI_DEB_PKGS := libopenmpi-dev openmpi-bin

MPICC  ?= mpicc
MPIRUN ?= mpirun
MPI_NP ?= 2
MPI_CC_FOUND := $(shell command -v $(MPICC) 2>/dev/null)
MPI_RUN_FOUND := $(shell command -v $(MPIRUN) 2>/dev/null)
MPI_SKIP_MSG := distributed: $(MPICC) not found, MPI example skipped (install: apt-get install $(MPI_DEB_PKGS))

_build/examples/distributed: examples/distributed.c $(wildcard examples/*.h) $(HDRS) lib/libdfm.so | _build/examples
	$(MPICC) $(EX_CFLAGS) $< -o $@ -Llib -ldfm $(RPATH) $(BLAS_LIBS) -lpthread -lm

.PHONY: distributed run-distributed deps-mpi
ifneq ($(MPI_CC_FOUND),)
distributed: all _build/examples/distributed
else
distributed:
	@echo "$(MPI_SKIP_MSG)"
endif

# OpenMPI refuses to run as root without these (harmless otherwise).
ifneq ($(and $(MPI_CC_FOUND),$(MPI_RUN_FOUND)),)
run-distributed: distributed
	OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 \
	  $(MPIRUN) -np $(MPI_NP) ./_build/examples/distributed $(DIST_ARGS)
else
run-distributed:
	@echo "distributed: needs $(MPICC) and $(MPIRUN); not run (install: apt-get install $(MPI_DEB_PKGS))"
endif

deps-mpi:
	@sh tools/deps.sh $(MPI_DEB_PKGS)

examples: distributed
