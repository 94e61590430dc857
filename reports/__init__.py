"""Report drivers: the code behind the README's and docs' tables and figures, a layer above the library.

``python -m reports.<domain>.figures --out docs/figures`` (``make figures`` runs them all) trains with
``python run.py`` in subprocesses like a user (:mod:`reports.runs`), reads the runs back with
:mod:`lit_sr.inference.run_folder` and draws with the domains' plots; ``python -m reports.lensing.compare``
collects a sweep. reports may import lit_sr and its domains; lit_sr never imports reports (an import-linter
contract in pyproject.toml, checked by tests/test_architecture.py). Not installed with lit_sr: run from the
repository root.
"""
