"""Did it work? Report cards that compare a run's adapter with its base model on examples it did not train on."""
from .evaluate import card_path, evaluate_run, evaluate_trained, read_card
from .report_card import VERDICTS, make_report_card

__all__ = ["card_path", "evaluate_run", "evaluate_trained", "read_card", "VERDICTS", "make_report_card"]
