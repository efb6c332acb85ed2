"""Loss terms and their registry (see :mod:`kdkit.terms.base`); one file per family, each registered where it is
defined. Every module of this package is imported here, so a new family is one new file."""

import importlib
import pkgutil

from kdkit.terms.base import (CONFIGS, TERMS, CacheRequest, LayerMapConfig, LayerMapKind, LossConfig, Needs,
                              PairedTerm, SetupContext, Term, build_term, build_terms, config_class, config_classes,
                              count_units, loss_names, own_losses_only, register, signal_spec, teacher_free,
                              teacher_free_names, term_class)

# the shipped families first, in the order `kdkit info` lists them; then any other file of the package
_SHIPPED = ("logits", "hidden", "attention", "relation", "universal", "smoothing", "reweighting", "ranking", "token")
for _name in (*_SHIPPED, *sorted(m.name for m in pkgutil.iter_modules(__path__) if m.name not in _SHIPPED)):
    importlib.import_module(f"{__name__}.{_name}")

__all__ = ["CONFIGS", "TERMS", "CacheRequest", "LayerMapConfig", "LayerMapKind", "LossConfig", "Needs", "PairedTerm",
           "SetupContext", "Term", "build_term", "build_terms", "config_class", "config_classes", "count_units",
           "loss_names", "own_losses_only", "register", "signal_spec", "teacher_free", "teacher_free_names",
           "term_class"]
