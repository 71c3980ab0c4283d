"""Test support lives in the importable bridgehead_testing package (testing/), not beside the tests."""
