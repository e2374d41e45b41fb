"""Models built from rnnkit layers, and the registry tasks build them from."""
from .cells import CELLS, recurrent_layer
from .classifier import ClassifierConfig, SequenceClassifier
from .ctc import CTCConfig, CTCModel
from .echo_state import EchoStateConfig, EchoStateForecaster
from .forecaster import ForecasterConfig, SequenceForecaster
from .frame_sequence import FrameEncoder, FrameSequenceClassifier, FrameSequenceConfig
from .jordan import JordanConfig, JordanRNN
from .language_model import LanguageModel, LMConfig
from .multi_forecaster import Forecaster, MultiForecasterConfig
from .piano_roll import PianoRollConfig, PianoRollModel
from .registry import MODELS, RegisteredModel
from .regressor import RegressorConfig, SequenceRegressor
from .seq2seq import Seq2Seq, Seq2SeqConfig
from .tagger import SequenceTagger, TaggerConfig
from .tree_lstm import (BinaryTreeLSTM, ChildSumTreeLSTM, RecursiveNN, TreeClassifierConfig,
                        TreeSentimentClassifier)

__all__ = ["Seq2Seq", "Seq2SeqConfig", "LanguageModel", "LMConfig", "CELLS", "recurrent_layer", "MODELS", "RegisteredModel",
           "RegressorConfig", "SequenceRegressor", "ForecasterConfig", "SequenceForecaster", "JordanConfig", "JordanRNN",
           "EchoStateConfig", "EchoStateForecaster",
           "MultiForecasterConfig", "Forecaster",
           "ClassifierConfig", "SequenceClassifier",
           "CTCConfig", "CTCModel",
           "TaggerConfig", "SequenceTagger",
           "PianoRollConfig", "PianoRollModel",
           "FrameSequenceConfig", "FrameSequenceClassifier", "FrameEncoder",
           "TreeClassifierConfig", "TreeSentimentClassifier", "BinaryTreeLSTM", "ChildSumTreeLSTM", "RecursiveNN"]
