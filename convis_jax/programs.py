"""What the command line and the scripts share as programs: exit codes, one-line
errors and warnings, argument parsers and types, and Ctrl-C handled at safe points.

User mistakes and unreadable or unwritable files end with one line on stderr and
exit code 2 (`run_command`); Ctrl-C ends a run with exit code 130. A program holds
Ctrl-C from its first line (`hold_interrupts`) while native libraries load
(`load_native_libraries`), and `run_command` acts on a held one as soon as its
handler is in place.
"""

from __future__ import annotations

import _thread
import argparse
import contextlib
import gc
import signal
import sys
import threading
import warnings
from collections.abc import Callable, Sequence

from convis_jax.core.batches import positive_int
from convis_jax.errors import ConvisError, one_line

# The exit codes of the command line and of every script (`run_command`).
EXIT_ERROR = 2
EXIT_INTERRUPTED = 130


class OneLineParser(argparse.ArgumentParser):
    """argparse whose usage errors are one-line `ConvisError`s (the scripts use it too)."""

    def error(self, message):  # one line, not argparse's usage block
        raise ConvisError(f"{self.prog}: {message} (see --help)")


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """Help that ends each option's line with its default, unless it has none or says it."""

    def _get_help_string(self, action):
        text = action.help or ""
        if ("default" in text or action.required or action.default in (None, False)
                or action.default is argparse.SUPPRESS):
            return text
        return f"{text} (default: %(default)s)"


def _number(kind, minimum, what: str):
    """An argparse type: `kind` parsed from the text and at least `minimum` (exclusive for floats)."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, found {text!r}") from None
        if kind is int and value > MAX_INT:
            raise argparse.ArgumentTypeError(f"expected {what} below 2**63, found {text!r}")
        too_small = value <= minimum if kind is float else value < minimum
        if too_small or value != value or value in (float("inf"), float("-inf")):
            raise argparse.ArgumentTypeError(f"expected {what}, found {text!r}")
        return value
    return parse


# Seeds and counts fit a signed 64-bit integer (what jax.random.key takes).
MAX_INT = 2**63 - 1


def POSITIVE_INT(text: str) -> int:  # noqa: N802 (an argparse type, named like the others)
    """An argparse type: a positive integer below 2**63, by the library's one rule (`positive_int`)."""
    try:
        value = positive_int(int(text), "value")
    except ValueError:  # not an integer, or InputError (a ValueError): not positive
        raise argparse.ArgumentTypeError(f"expected a positive integer, found {text!r}") from None
    if value > MAX_INT:
        raise argparse.ArgumentTypeError(f"expected a positive integer below 2**63, found {text!r}")
    return value


SEED = _number(int, 0, "a non-negative integer seed")
POSITIVE_FLOAT = _number(float, 0.0, "a positive number")


# Spelled out rather than imported from the backend, so that --help and usage errors
# do not import jax; a test keeps them equal to `gradients.SCORES` and `KINDS`.
GRADIENT_SCORES = ("cosine", "subtree_cosine", "probability", "subtree_probability")
GRADIENT_KINDS = ("gradient", "grad_x_input", "smoothgrad", "tokens")


def add_gradient_options(parser) -> None:
    """--score, --kind and --strategy of gradient maps, shared by commands and scripts."""
    parser.add_argument("--score", default="cosine", choices=GRADIENT_SCORES,
                        help="gradient method: the concept score to differentiate")
    parser.add_argument("--kind", default="gradient", choices=GRADIENT_KINDS,
                        help="gradient method: the kind of map")
    parser.add_argument("--strategy", default="auto", choices=["auto", "vmap", "jacobian"],
                        help="gradient method: how concepts share the backward pass")


def add_model_options(parser: argparse.ArgumentParser, *, vocabulary: bool = True) -> None:
    """--model, --vocabulary, --text, --dtype and --quiet, shared by commands and scripts."""
    parser.add_argument("--model", default=None,
                        help="model folder or Hugging Face hub id of a CLIP, an OpenCLIP ViT-CLIP "
                             "or a SigLIP (default: the bundled model)")
    if vocabulary:
        parser.add_argument("--vocabulary", default=None,
                            help="physical_objects, all_nouns, or a file of words/synsets "
                                 "(default: the model's own vocabulary, else physical_objects)")
        add_text_option(parser)
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"],
                        help="precision of the model's products: float32 (exact), bfloat16 (bf16 "
                             "operands, float32 results), or auto (default: $CONVIS_JAX_DTYPE if "
                             "set, else bfloat16 on GPUs, TPUs and CPUs with bfloat16 units)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars or notes")


def add_text_option(parser: argparse.ArgumentParser) -> None:
    """--text: how a concept becomes the text that is encoded."""
    parser.add_argument("--text", default="definition",
                        help='concept texts: definition, lemmas, or a template like '
                             '"a photo of a {}"')


def script_parser(prog: str, description: str):
    """The evaluation scripts' argument parser, with the options they share
    (each script adds its own --vocabulary: their defaults differ).

    Its errors raise `ConvisError` (one line, no usage block), like the
    `convis-jax` command line's.
    """
    parser = OneLineParser(prog=prog, description=description,
                           formatter_class=DefaultsHelpFormatter)
    add_model_options(parser, vocabulary=False)
    add_text_option(parser)
    parser.add_argument("--log", default=None,
                        help="per-image results file (default: <out>.images.jsonl)")
    parser.add_argument("--restart", action="store_true",
                        help="discard earlier per-image results instead of resuming")
    return parser


def script_main(parser, run: Callable, argv: Sequence[str] | None = None) -> int:
    """Parses `argv` and calls `run(args)`: a script's `main`, with the CLI's exit codes."""
    return run_command(lambda: run(parser.parse_args(argv)), program=argv is None,
                       interrupted="interrupted; run the same command again to resume")


def hold_interrupts() -> None:
    """For a program's first line: Ctrl-C (SIGINT) is held, not delivered, until released.

    A signal that lands while a native library imports or initialises can crash it
    (XLA's start-up has died of SIGSEGV and SIGABRT that way) or turn into an
    ImportError; held, it waits and is never lost. Threads started meanwhile (XLA's
    pools) inherit the mask and never receive it. `run_command` releases it once its
    handler is in place. Where signals cannot be masked (Windows) this does nothing.
    """
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})


def release_interrupts() -> None:
    """Lets Ctrl-C through again; one held until now is delivered at once."""
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def load_native_libraries(*, backend: bool = True) -> None:
    """Imports the native libraries a run needs (call it while Ctrl-C is held).

    Args:
        backend: also start JAX's backend (its device threads then never see SIGINT);
            False where `jax.distributed.initialize` must still run first.
    """
    import jax

    if backend:
        jax.devices()
    import flax.linen  # noqa: F401
    import jax.numpy  # noqa: F401
    import PIL.Image  # noqa: F401


def run_command(action: Callable[[], object], *, interrupted: str = "interrupted",
                program: bool = False) -> int:
    """Runs `action`; the one mapping of errors to exit codes, for the CLI and the scripts.

    A Ctrl-C held by `hold_interrupts` is delivered once `action` has released it
    (`release_interrupts`), or when it ends, and stops the run as any other.

    Args:
        action: the run.
        interrupted: the line printed on Ctrl-C.
        program: True for a program's `main` (never for a library call, which must
            not change its caller's handlers): Ctrl-C is ignored once the run has
            ended, so that one landing during the interpreter's shutdown leaves the
            exit code as it is, where Python would end the process by SIGINT.

    Returns:
        0 when it finished; `EXIT_ERROR` (2) for a user mistake (`ConvisError`) or a file
        that cannot be read or written (`OSError`: unwritable folder, full disk), each
        printed as one line on stderr; `EXIT_INTERRUPTED` (130) for Ctrl-C, printing
        `interrupted`; argparse's own code for --help and --version.
    """
    afterwards = signal.SIG_IGN if program else None
    try:
        with interrupt_at_safe_points(afterwards=afterwards), one_line_warnings():
            try:
                action()
            finally:
                release_interrupts()
    except ConvisError as err:
        print(f"error: {one_line(err)}", file=sys.stderr)
        return EXIT_ERROR
    except OSError as err:
        where = f": {err.filename}" if err.filename else ""
        print(f"error: {one_line(err.strerror or err)}{where}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print(interrupted, file=sys.stderr)
        return EXIT_INTERRUPTED
    except SystemExit as done:  # --help and --version print and exit through argparse
        return done.code if isinstance(done.code, int) else 0
    return 0


# Where the import system runs a module's code: an exception raised there can leave
# a native extension half initialised (or become an ImportError).
_IMPORT_FILES = ("<frozen importlib._bootstrap>", "<frozen importlib._bootstrap_external>")


def _unsafe_for_interrupt(frame) -> bool:
    """Whether an exception raised at `frame` would be swallowed or do harm.

    An exception raised inside a garbage-collector callback (JAX registers one) or a
    `__del__` method is printed as "Exception ignored" and dropped, so Ctrl-C landing
    there would not stop the run; one raised inside an import can break a native
    library's initialisation.
    """
    callbacks = {getattr(callback, "__code__", None) for callback in gc.callbacks}
    while frame is not None:
        code = frame.f_code
        if code in callbacks or code.co_name == "__del__" or code.co_filename in _IMPORT_FILES:
            return True
        frame = frame.f_back
    return False


@contextlib.contextmanager
def interrupt_at_safe_points(*, afterwards=None):
    """Ctrl-C (SIGINT) raises KeyboardInterrupt, but never where it would be swallowed.

    Python's own handler raises wherever the main thread happens to be; inside a
    garbage-collection callback the exception is dropped and the run goes on, and
    inside an import it can break a native library. This handler defers such a
    landing and re-delivers the signal 50 ms later, until it lands at a safe point;
    a KeyboardInterrupt that Python reports as unraisable (raised in a weakref
    callback, say) is re-delivered the same way. Files are written atomically, so
    stopping anywhere else leaves no partial output. Outside the main thread it does
    nothing.

    Args:
        afterwards: the SIGINT handler to install on leaving (None: the one found).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def redeliver():
        retry = threading.Timer(0.05, _thread.interrupt_main, args=(signal.SIGINT,))
        retry.daemon = True
        retry.start()

    def handler(signum, frame):
        if _unsafe_for_interrupt(frame):
            redeliver()
            return
        raise KeyboardInterrupt

    def unraisable(info):
        # Raised where Python cannot propagate it (a weakref callback, say): try again.
        if isinstance(info.exc_type, type) and issubclass(info.exc_type, KeyboardInterrupt):
            redeliver()
        else:
            previous_hook(info)

    previous = signal.signal(signal.SIGINT, handler)
    previous_hook, sys.unraisablehook = sys.unraisablehook, unraisable
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous if afterwards is None else afterwards)
        sys.unraisablehook = previous_hook


@contextlib.contextmanager
def one_line_warnings():
    """Warnings as one line on stderr ("warning: ..."), not Python's two (message, source line)."""
    previous = warnings.formatwarning
    warnings.formatwarning = lambda message, *args, **kwargs: f"warning: {one_line(message)}\n"
    try:
        yield
    finally:
        warnings.formatwarning = previous
