"""Helpers shared by the test suites: a package of its own, so no test module imports another."""
