"""Every model a task can train, by name, with the config dataclass it owns."""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from .classifier import ClassifierConfig, SequenceClassifier
from .ctc import CTCConfig, CTCModel
from .echo_state import EchoStateConfig, EchoStateForecaster
from .forecaster import ForecasterConfig, SequenceForecaster
from .frame_sequence import FrameSequenceClassifier, FrameSequenceConfig
from .language_model import LanguageModel, LMConfig
from .multi_forecaster import Forecaster, MultiForecasterConfig
from .piano_roll import PianoRollConfig, PianoRollModel
from .regressor import RegressorConfig, SequenceRegressor
from .seq2seq import Seq2Seq, Seq2SeqConfig
from .tagger import SequenceTagger, TaggerConfig
from .tree_lstm import TreeClassifierConfig, TreeSentimentClassifier


@dataclass(frozen=True)
class RegisteredModel:
    config: type
    module: type[nn.Module]

    def build(self, config) -> nn.Module:
        # a module whose constructor takes plain arguments offers from_config
        return getattr(self.module, "from_config", self.module)(config)


MODELS: dict[str, RegisteredModel] = {
    "language_model": RegisteredModel(LMConfig, LanguageModel),
    "sequence_regressor": RegisteredModel(RegressorConfig, SequenceRegressor),
    "sequence_forecaster": RegisteredModel(ForecasterConfig, SequenceForecaster),
    "sequence_classifier": RegisteredModel(ClassifierConfig, SequenceClassifier),
    "sequence_tagger": RegisteredModel(TaggerConfig, SequenceTagger),
    "tree_classifier": RegisteredModel(TreeClassifierConfig, TreeSentimentClassifier),
    "seq2seq": RegisteredModel(Seq2SeqConfig, Seq2Seq),
    "echo_state_forecaster": RegisteredModel(EchoStateConfig, EchoStateForecaster),
    "piano_roll": RegisteredModel(PianoRollConfig, PianoRollModel),
    "forecaster": RegisteredModel(MultiForecasterConfig, Forecaster),
    "ctc": RegisteredModel(CTCConfig, CTCModel),
    "frame_sequence": RegisteredModel(FrameSequenceConfig, FrameSequenceClassifier),
}
