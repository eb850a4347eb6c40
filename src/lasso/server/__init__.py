"""lasso.server"""
