"""Named errors. Each carries a one-line message the CLI prints as is (no traceback)."""


class ElasticDiTError(Exception):
    """Base of every error the tool reports to the user."""


class CheckpointError(ElasticDiTError):
    """Any problem with a checkpoint file."""


class NotSafetensorsError(CheckpointError):
    pass


class TruncatedCheckpointError(CheckpointError):
    pass


class MissingConfigError(CheckpointError):
    pass


class ConfigParseError(CheckpointError):
    pass


class UnsupportedVersionError(CheckpointError):
    pass


class MissingTensorsError(CheckpointError):
    pass


class MissingFilesError(CheckpointError):
    """A stored file the config needs (a tokenizer's vocab.json, merges.txt or tokenizer.json) is absent."""


class UnexpectedTensorsError(CheckpointError):
    pass


class ShapeMismatchError(CheckpointError):
    pass


class DtypeError(CheckpointError):
    pass


class NonFiniteWeightsError(CheckpointError):
    pass


class UnsafePickleError(CheckpointError):
    pass


class ConfigError(ElasticDiTError):
    """The configuration is well-formed JSON but describes something invalid."""


class DepthPlanError(ConfigError):
    pass


class GridError(ConfigError):
    """A compression ratio or SSBA tile does not divide the token grid at a resolution."""


class UnsupportedModelError(ConfigError):
    """A source model uses a feature this tool cannot represent."""


class OperatingPointError(ElasticDiTError):
    """An unknown operating point name."""


class RecipeError(ElasticDiTError):
    """An unknown or invalid export recipe."""


class LoweringUnavailableError(RecipeError):
    """A recipe's attention lowering calls a custom operator its target's runtime cannot provide."""


class BundleError(ElasticDiTError):
    """A bundle is malformed, tampered with, or cannot be written."""


class BundlePathError(BundleError):
    """A manifest names a path outside its bundle (absolute, '..', a link out) or a method file it does not hash."""


class ExternalWeightsError(BundleError):
    """A program's external weights file (`.ptd`) is missing, altered, or not the one it was exported with."""


class ExportError(ElasticDiTError):
    """Lowering or serialising an operating point failed."""


class PhoneLimitError(ExportError):
    """A recipe's artifact would break a phone's limit (one weight file's size, one function's weights)."""


class DenseAttentionError(ExportError):
    """A recipe lowers attention as `dense` for a checkpoint whose SSBA masks the points exported: a different
    function from the one the checkpoint was trained with."""


class DeviceError(ElasticDiTError):
    """A device is missing, unreachable or misbehaving."""


class DeviceProfileError(ElasticDiTError):
    """A device profile or the ssh hosts file is invalid, or a named profile does not exist."""


class ProfileError(ElasticDiTError):
    """A profile result is malformed or cannot satisfy a request."""


class KernelError(ElasticDiTError):
    """elasticdit's native ExecuTorch kernels cannot be built or loaded, or a runtime lacks an op a bundle needs."""


def first_line(exc: BaseException, limit: int = 300) -> str:
    """The first line of an exception's message (at most `limit` characters), or its type's name when empty:
    what a one-line error says about a third-party failure."""
    text = str(exc).strip()
    return text.splitlines()[0][:limit] if text else type(exc).__name__


class ScheduleError(ElasticDiTError):
    """A step schedule is malformed or cannot run on the source it is given to (docs/design.md, "Step schedules")."""


class ScheduleSyntaxError(ScheduleError):
    """The text is not `POINT` or `POINT:SHARE,POINT:SHARE,...` (or a named schedule is not `NAME=SPEC`)."""


class ScheduleSharesError(ScheduleError):
    """A share is not a positive number, or the shares do not sum to 1."""


class UnknownPointError(ScheduleError, OperatingPointError):
    """A schedule names something that is not an operating point of the model."""


class PointNotInBundleError(ScheduleError):
    """A schedule names an operating point of the model that the bundle was not exported with."""


class PointResolutionError(ScheduleError):
    """A schedule names a point the bundle holds only at other resolutions than the one asked for."""
