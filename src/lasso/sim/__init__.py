"""lasso.sim"""
