"""Command-line entry points: one module per command a user runs.

Every launcher ends in `launch.run(main)`, and the console scripts of the installed package
(`vdim-pretrain`, … see pyproject.toml) call the `*_command` functions at the bottom of this file
(not named like the launcher modules, which they would hide). Both parse
flags the same way: absl's parser, after `--flagfile` arguments are read here (`expand_flagfiles`)
so that a flagfile shipped with vdim_tf can be named from any folder.
"""

import importlib
import os
import sys

# The repo's configs/ (a checkout or an editable install), or the copy inside an installed wheel.
CONFIG_DIRS = (
    os.path.join(os.path.dirname(os.path.dirname(__file__)), "configs"),
    os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(__file__))), "configs"),
)


def find_config(path):
    """The file a `--flagfile=path` means.

    A path that exists (relative paths: relative to the current folder, as in the shell) is itself.
    Otherwise a bare name (`demo_pretrain.cfg`) or `configs/NAME` is looked up among the flagfiles
    shipped with vdim_tf.

    Raises:
      FileNotFoundError: naming the absolute path looked at and the shipped flagfiles.
    """
    path = os.path.expanduser(path)
    if os.path.isfile(path):
        return path
    head, name = os.path.split(os.path.normpath(path))
    if head in ("", "configs"):
        for folder in CONFIG_DIRS:
            if os.path.isfile(os.path.join(folder, name)):
                return os.path.join(folder, name)
    shipped = sorted({n for d in CONFIG_DIRS if os.path.isdir(d) for n in os.listdir(d) if n.endswith(".cfg")})
    raise FileNotFoundError(f"--flagfile={path}: no such file {os.path.abspath(path)}, and no shipped flagfile "
                            f"of that name (shipped: {', '.join(shipped) or 'none'})")


def _flagfile_argument(arg):
    for prefix in ("--flagfile=", "-flagfile="):
        if arg.startswith(prefix):
            return arg[len(prefix):].strip()
    return None


def expand_flagfiles(argv, _seen=()):
    """`argv` with every `--flagfile=X` (also inside flagfiles) replaced by the lines of the file
    `find_config(X)` names, as absl would insert them: blank lines and `#` or `//` comments
    dropped. Nested flagfiles written as `configs/NAME.cfg` thus resolve from any folder.
    """
    out = []
    for arg in argv:
        path = _flagfile_argument(arg)
        if path is None:
            out.append(arg)
            continue
        path = os.path.abspath(find_config(path))
        if path in _seen:
            raise ValueError(f"--flagfile={path} includes itself (through {' -> '.join(_seen)})")
        with open(path, encoding="utf-8") as f:
            lines = [line.strip() for line in f]
        lines = [line for line in lines if line and not line.startswith(("#", "//"))]
        out += expand_flagfiles(lines, (*_seen, path))
    return out


def parse_flags(argv):
    """absl's `parse_flags_with_usage` after `expand_flagfiles`; a bad flagfile exits with status 1."""
    from absl import app

    try:
        argv = [argv[0], *expand_flagfiles(argv[1:])]
    except (FileNotFoundError, ValueError) as e:
        sys.exit(f"{os.path.basename(argv[0])}: error: {e}")
    return app.parse_flags_with_usage(argv)


def run(main):
    """`absl.app.run(main)` with `parse_flags`."""
    from absl import app

    app.run(main, flags_parser=parse_flags)


def _console(command):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    module = importlib.import_module(f"vdim_tf.launch.{command}")
    # absl's --help prints the __main__ module's docstring: the launcher's, not the script wrapper's.
    sys.modules["__main__"].__doc__ = module.__doc__
    run(module.main)


def pretrain_command():
    _console("pretrain")


def finetune_command():
    _console("finetune")


def evaluate_command():
    _console("evaluate")


def export_command():
    _console("export")


def predict_command():
    _console("predict")


def prepare_command():
    _console("prepare")


def demo_command():
    _console("demo")
