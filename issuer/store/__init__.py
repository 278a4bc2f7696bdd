"""issuer/store"""
