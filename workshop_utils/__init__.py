"""Reusable, tested code of the stochastic-computing workshop: neurons, distributions, training, I/O, plots."""

from . import encoding, engine, evaluation, experiments, plotting
from .distribution import joint_distribution, kl_loss, state_labels
from .encoding import poisson_input
from .neurons import NetworkTrace, RefractoryLIFNetwork, notebook_parameters
from .paths import workshop_root
from .results_io import load_results, model_from_results, save_results
from .targets import generate_target_distribution
from .training import ExperimentConfig, TrainingResult, build_model, target_for, train, training_step

__all__ = [
    "encoding",
    "engine",
    "evaluation",
    "experiments",
    "plotting",
    "ExperimentConfig",
    "NetworkTrace",
    "RefractoryLIFNetwork",
    "TrainingResult",
    "build_model",
    "generate_target_distribution",
    "joint_distribution",
    "kl_loss",
    "load_results",
    "model_from_results",
    "notebook_parameters",
    "poisson_input",
    "save_results",
    "state_labels",
    "target_for",
    "train",
    "training_step",
    "workshop_root",
]
