"""``python -m meshwork.cli``: the same as the ``meshwork`` command."""

from meshwork.cli import main

if __name__ == "__main__":
    main()
