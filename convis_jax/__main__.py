"""`convis-jax` and `python -m convis_jax`: the command line (`convis_jax.cli`).

Ctrl-C is held from the first line, before numpy, jax or any other native library
is imported (`programs.hold_interrupts`), and acted on once the run's handler is in
place: exit code 130, no traceback, no partial file.
"""

import signal
import sys


def main() -> int:
    """The program's entry point; returns its exit code."""
    if hasattr(signal, "pthread_sigmask"):  # as programs.hold_interrupts, before importing it
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    from convis_jax.cli import main as cli_main

    return cli_main()


if __name__ == "__main__":
    sys.exit(main())
