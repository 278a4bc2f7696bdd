"""issuer/oauth"""
