"""Export: merge a run's adapter into its base model (checked, with a model card), zip it, or zip the adapter."""
from .archive import export_adapter, export_folder
from .checks import ExportError, NotEnoughSpace
from .merge import ExportResult, merge_run
from .verify import MergeCheck

__all__ = ["ExportError", "ExportResult", "MergeCheck", "NotEnoughSpace", "export_adapter", "export_folder",
           "merge_run"]
