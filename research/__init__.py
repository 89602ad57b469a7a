"""Research diagnostics beside the compression pipeline (seed study, oos frontier); not installed with the package."""
