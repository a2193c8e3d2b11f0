"""The core of objax (variables, collections, modules and the module transforms), private to the package.

Users import these names from `objax` or from the Objax 1.8 module paths (`objax.variable`, `objax.module`...),
which re-export them. docs/internals.md lists the files of this package in their dependency order.
"""
