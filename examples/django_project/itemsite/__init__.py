"""The items API on Django (plain views) and Django REST framework, protected by authmw."""
