"""lasso.dashboard"""
