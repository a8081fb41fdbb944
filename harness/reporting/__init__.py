"""Library behind `harness report`: load (reading result files), stats (pure statistics), tables (aggregation,
Table 2 layout, published comparison), figures (seaborn PNGs), document (REPORT.md)."""
