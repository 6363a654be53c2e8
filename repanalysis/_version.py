"""The tool version, in one place low in the floors (recorded in every Dump and result JSON)."""
__version__ = "0.1.0"
