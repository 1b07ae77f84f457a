"""flowherd reporter: reads merged flow tables and ranks, classifies, plots and exports them."""
