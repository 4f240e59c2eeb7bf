"""Runs the dfm package's unittest suite and prints one plain summary line.
Usage: python3 python/tests/run.py [-v]. Exit status 0 when every test passed."""
import io
import os
import sys
import time
import unittest

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, here)


def main():
    verbosity = 2 if "-v" in sys.argv[1:] else 1
    suite = unittest.defaultTestLoader.discover(here, pattern="test_*.py", top_level_dir=here)
    t0 = time.time()
    stream = sys.stdout if verbosity > 1 else io.StringIO()
    result = unittest.TextTestRunner(stream=stream, verbosity=verbosity).run(suite)
    for what, items in (("FAIL", result.failures), ("ERROR", result.errors)):
        for test, tb in items:
            print("%s: %s\n%s" % (what, test.id(), tb))
    for test, reason in result.skipped:
        print("SKIP: %s: %s" % (test.id(), reason))
    import dfm
    print("python package: %d tests, %d failures, %d errors, %d skipped in %.1f s (libdfm %s, %s)"
          % (result.testsRun, len(result.failures), len(result.errors), len(result.skipped),
             time.time() - t0, dfm.version(), dfm.library_path))
    return 0 if result.wasSuccessful() and result.testsRun > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
