"""lasso.probes"""
