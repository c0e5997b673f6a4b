"""`atoms-appliance doctor`: checks with a fix for each, a mic meter and an echo measurement."""
