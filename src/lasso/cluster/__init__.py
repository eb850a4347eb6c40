"""lasso.cluster"""
