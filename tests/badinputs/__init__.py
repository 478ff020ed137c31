"""A catalogue of bad inputs and faults for ``vla-align``, and the harness that runs them.

``catalogue.CASES`` lists the cases as data; ``harness.run_case`` runs one and classifies the outcome
(clean / traceback / silent / lost / other). ``tests/integration/test_bad_inputs.py`` asserts that every
case is clean; ``benchmarks/bad_inputs_census.py`` counts the outcomes for any version of the code.
"""
