"""Demo steps: one module per analysis family (ORDER, TITLE, run(ctx))."""
