"""``python -m dnn``: the command line through the console script's own entry point
(:func:`dnn.entry.main`), so that a Ctrl-C while it starts is the same one line."""

from dnn.entry import main

if __name__ == "__main__":
    main()
