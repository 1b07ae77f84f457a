"""``reporter``: one module per command group, and the pieces they share."""
