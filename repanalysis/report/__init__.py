"""Reports: comparison tables, JSON, and the self-contained HTML report."""
from repanalysis.report.html import Figure, Section, Table, render_report, write_report
from repanalysis.report.tables import format_table, format_value, write_csv_atomic, write_json_atomic

__all__ = ["format_table", "format_value", "write_csv_atomic", "write_json_atomic",
           "Table", "Figure", "Section", "render_report", "write_report"]
