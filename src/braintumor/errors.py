"""Errors a user can fix, each shown as one line naming the thing and the reason (``str(err)`` is
``"<name>: <reason>"``); the CLI prints them and exits 2. Anything else is a bug and keeps its traceback."""


class UserError(Exception):
    """Base of the errors the CLI reports in one line (``--debug`` shows their traceback too)."""

    def __init__(self, name: str, reason: str):
        # one line whatever a file name or a third-party message holds (a zip member named with a line break)
        self.name = " ".join(str(name).splitlines())
        self.reason = " ".join(str(reason).splitlines())
        super().__init__(f"{self.name}: {self.reason}")


class ScanError(UserError, ValueError):
    """A scan (file or upload) that cannot be read or used."""


class ModelFolderError(UserError, ValueError):
    """A model folder that cannot be used: missing, malformed, tampered with, of the wrong kind."""


class DatasetError(UserError, ValueError):
    """A dataset that cannot be used as given: missing files, no usable rows, nothing unseen to score."""


class OutputError(UserError):
    """An output that could not be written as asked (a report's plots, a gallery, a montage)."""


class OptionError(UserError, ValueError):
    """A command-line option, or a combination of them, that cannot work; ``name`` is the option."""


class MissingExtra(UserError):
    """An optional dependency that is not installed; the reason says which extra brings it."""


#: optional top-level packages → the extra that installs them (an ImportError of anything else is a bug)
EXTRAS = {
    "torch": "train",
    "lightning": "train",
    "monai": "train",
    "onnx": "train",
    "matplotlib": "train",
    "streamlit": "app",
    "fastapi": "serve",
    "uvicorn": "serve",
    "multipart": "serve",
    "httpx": "serve",
    "timm": "timm",
}


def missing_extra(err: ImportError) -> MissingExtra | None:
    """The user-facing form of an ImportError of an optional package; None for any other (a real bug)."""
    top = (err.name or "").split(".")[0]
    if top not in EXTRAS:
        return None
    return MissingExtra(top, f"not installed; pip install 'braintumor[{EXTRAS[top]}]'")
