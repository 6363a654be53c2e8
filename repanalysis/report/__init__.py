"""Reports: comparison tables and JSON."""
from repanalysis.report.tables import format_table, format_value, write_csv_atomic, write_json_atomic

__all__ = ["format_table", "format_value", "write_csv_atomic", "write_json_atomic"]
