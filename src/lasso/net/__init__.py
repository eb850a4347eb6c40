"""lasso.net"""
