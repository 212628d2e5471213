"""ASE plugin entry point (group ``ase.plugins``): lists FlattenedCalculator.

ASE's plugin API lives in the private, experimental ``ase._4`` package. The import
is guarded so that a change there can never make ``ase`` itself fail: the plugin
list is then simply empty (``get_calculator_class("flattened")`` keeps working,
see ``ase_flatten/__init__.py``).
"""

try:
    from ase._4.plugins.plugin import CalculatorPlugin

    __ase_plugins__ = {
        CalculatorPlugin(
            "flattened",
            citation="ase-flatten: flattening the error of machine-learning "
            "force fields by training-set selection",
            implementation="ase_flatten.calculator.FlattenedCalculator",
        )
    }
except Exception:  # noqa: BLE001 - never break ASE
    __ase_plugins__ = set()
