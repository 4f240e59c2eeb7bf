# The Python package (python/, docs/python.md) next to the C library:
#
#   make install-python PYTHON=v/bin/python   make install, then the dfm package into the
#                                             environment of $(PYTHON) (a venv's interpreter;
#                                             Debian's /usr/bin/python3 refuses pip installs
#                                             unless PIP_FLAGS has --break-system-packages)
#   make uninstall-python PYTHON=...          pip uninstall of the package
#
# The package installed this way bundles no library: it records $(LIBDIR) (the installed
# libdfm.so.0) in dfm/_install.py. PREFIX, LIBDIR and DESTDIR act as for `make install` (with
# DESTDIR, pip installs under it with --root). pip builds from a copy of python/ in a scratch
# directory, so the source tree gets no build products. PyPI is never asked (--no-index), and
# the build uses the interpreter's own setuptools and wheel (--no-build-isolation).
PIP_FLAGS ?= --no-index --no-build-isolation --no-cache-dir --quiet

.PHONY: install-python uninstall-python clean-python
install-python: install
	@tmp=$$(mktemp -d) && cp -R python "$$tmp/python" && \
	  rm -rf "$$tmp/python/build" "$$tmp/python/dist" "$$tmp/python"/*.egg-info && \
	  DFM_INSTALL_LIBDIR="$(LIBDIR)" $(PYTHON) -m pip install $(PIP_FLAGS) \
	    $(if $(DESTDIR),--root "$(DESTDIR)") "$$tmp/python"; rc=$$?; rm -rf "$$tmp"; exit $$rc

uninstall-python:
	$(PYTHON) -m pip uninstall --yes libdfm

# Products of a `pip install ./python` run in the tree (an in-tree build).
clean-python:
	rm -rf python/build python/dist python/*.egg-info
clean: clean-python
