"""The host side of the plugin API (`broker.plugin`): loading plugins, running their hooks
in order.
"""
