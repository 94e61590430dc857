"""One sub-package per science domain: simulator, file schema and validation, DataModule, domain nets,
metrics/evaluators, plots and writers. Generic packages never import from here (import-linter contract)."""
