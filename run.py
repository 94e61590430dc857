"""Entry point: ``python run.py experiment=calo_rrdb trainer.devices=4`` (see README)."""

from lit_sr.cli import main

if __name__ == "__main__":
    main()
