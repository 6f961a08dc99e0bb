"""``python -m hfaudit``: the same as the ``hfaudit`` console script."""

from hfaudit.cli import main

if __name__ == "__main__":
    main()
