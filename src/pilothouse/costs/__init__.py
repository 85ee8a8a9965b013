"""Cost control: the price catalogue, cost calculation, budgets and reports."""
