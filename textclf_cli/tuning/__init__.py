"""textclf tune's machinery: the Optuna study, search spaces, the report and worker processes."""
