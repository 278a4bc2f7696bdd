"""jwks"""
