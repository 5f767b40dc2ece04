"""Consoles over time (docs/contract.md section 6): their storage, the ``console_convention``
check applied in each decision's transaction, and what ``sro-decoder consoles`` lists."""
