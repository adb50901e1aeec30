"""Run the medrlvr-lite CLI from a checkout: ``python cli.py --help`` is ``medrlvr-lite --help``."""

from medrlvr_lite.cli import main

if __name__ == "__main__":
    main()
