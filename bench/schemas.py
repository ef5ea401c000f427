"""Twenty JSON Schemas of the kinds agent frameworks send: nested objects, arrays, enums,
required fields, numbers with bounds. Shared by the structured-output tests and the benchmark."""
from __future__ import annotations

from typing import Any

NAME = {"type": "string", "minLength": 1, "maxLength": 40}
SCHEMAS: list[tuple[str, str, dict[str, Any]]] = [
    ("person", "Describe a person.", {
        "type": "object", "properties": {"name": NAME, "age": {"type": "integer", "minimum": 0, "maximum": 120}},
        "required": ["name", "age"], "additionalProperties": False}),
    ("country", "Tell me about India.", {
        "type": "object", "properties": {"name": NAME, "capital": NAME,
                                         "languages": {"type": "array", "items": NAME, "maxItems": 5}},
        "required": ["name", "capital", "languages"]}),
    ("weather", "What is the weather like in Oslo?", {
        "type": "object", "properties": {"city": NAME, "temperature_c": {"type": "number", "minimum": -60,
                                                                          "maximum": 60},
                                         "sky": {"enum": ["clear", "cloudy", "rain", "snow"]}},
        "required": ["city", "temperature_c", "sky"], "additionalProperties": False}),
    ("todo", "Plan my Saturday as a todo list.", {
        "type": "object", "properties": {"items": {"type": "array", "minItems": 1, "maxItems": 4, "items": {
            "type": "object", "properties": {"task": NAME, "done": {"type": "boolean"}},
            "required": ["task", "done"], "additionalProperties": False}}},
        "required": ["items"], "additionalProperties": False}),
    ("sentiment", "Classify: 'I love this phone, but the battery is bad.'", {
        "type": "object", "properties": {"label": {"enum": ["positive", "negative", "mixed"]},
                                         "confidence": {"type": "number", "minimum": 0, "maximum": 1}},
        "required": ["label", "confidence"], "additionalProperties": False}),
    ("book", "Recommend a book.", {
        "type": "object", "properties": {"title": NAME, "author": NAME,
                                         "year": {"type": "integer", "minimum": 1400, "maximum": 2030},
                                         "genres": {"type": "array", "items": {"enum": ["fiction", "history",
                                                                                       "science", "poetry"]},
                                                    "maxItems": 3}},
        "required": ["title", "author", "year"], "additionalProperties": False}),
    ("address", "Write a postal address in Paris.", {
        "type": "object", "properties": {"street": NAME, "city": NAME,
                                         "postcode": {"type": "string", "pattern": "^[0-9]{5}$"},
                                         "country": {"const": "France"}},
        "required": ["street", "city", "postcode", "country"], "additionalProperties": False}),
    ("order", "Create an order for two pizzas.", {
        "type": "object", "properties": {
            "order_id": {"type": "integer", "minimum": 1, "maximum": 999999},
            "lines": {"type": "array", "minItems": 1, "maxItems": 3, "items": {
                "type": "object", "properties": {"product": NAME, "quantity": {"type": "integer", "minimum": 1,
                                                                                "maximum": 10},
                                                 "price": {"type": "number", "minimum": 0, "maximum": 100}},
                "required": ["product", "quantity", "price"], "additionalProperties": False}}},
        "required": ["order_id", "lines"], "additionalProperties": False}),
    ("colors", "List some colors.", {"type": "array", "items": {"enum": ["red", "green", "blue", "yellow"]},
                                     "minItems": 1, "maxItems": 4}),
    ("yesno", "Is water wet?", {"type": "object", "properties": {"answer": {"type": "boolean"}},
                                "required": ["answer"], "additionalProperties": False}),
    ("event", "Alice and Bob go to a science fair on Friday.", {
        "type": "object", "properties": {"name": NAME, "day": {"enum": ["Monday", "Tuesday", "Wednesday", "Thursday",
                                                                        "Friday", "Saturday", "Sunday"]},
                                         "participants": {"type": "array", "items": NAME, "maxItems": 4}},
        "required": ["name", "day", "participants"], "additionalProperties": False}),
    ("rating", "Rate the movie Jaws.", {
        "type": "object", "properties": {"stars": {"type": "integer", "minimum": 1, "maximum": 5},
                                         "summary": {"type": "string", "maxLength": 80}},
        "required": ["stars", "summary"], "additionalProperties": False}),
    ("point", "Give me a point in the unit square.", {
        "type": "object", "properties": {"x": {"type": "number", "minimum": 0, "maximum": 1},
                                         "y": {"type": "number", "minimum": 0, "maximum": 1}},
        "required": ["x", "y"], "additionalProperties": False}),
    ("nested", "Describe a company and its CEO.", {
        "type": "object", "properties": {"company": {"type": "object", "properties": {
            "name": NAME, "founded": {"type": "integer", "minimum": 1800, "maximum": 2026},
            "ceo": {"type": "object", "properties": {"name": NAME, "age": {"type": "integer", "minimum": 18,
                                                                            "maximum": 100}},
                    "required": ["name"], "additionalProperties": False}},
            "required": ["name", "ceo"], "additionalProperties": False}},
        "required": ["company"], "additionalProperties": False}),
    ("matrix", "Give me a 2x2 matrix.", {
        "type": "object", "properties": {"rows": {"type": "array", "minItems": 2, "maxItems": 2, "items": {
            "type": "array", "minItems": 2, "maxItems": 2, "items": {"type": "integer", "minimum": -9,
                                                                     "maximum": 9}}}},
        "required": ["rows"], "additionalProperties": False}),
    ("contact", "Give me a contact card.", {
        "type": "object", "properties": {"name": NAME, "email": {"type": "string",
                                                                 "pattern": "^[a-z]{1,10}@[a-z]{1,10}\\.com$"},
                                         "phone": {"type": "string", "pattern": "^\\+?[0-9]{6,12}$"}},
        "required": ["name", "email"], "additionalProperties": False}),
    ("recipe", "A recipe for pancakes.", {
        "type": "object", "properties": {"dish": NAME, "servings": {"type": "integer", "minimum": 1, "maximum": 12},
                                         "ingredients": {"type": "array", "minItems": 1, "maxItems": 5,
                                                         "items": NAME},
                                         "vegetarian": {"type": "boolean"}},
        "required": ["dish", "ingredients", "vegetarian"], "additionalProperties": False}),
    ("status", "Report the server status.", {
        "type": "object", "properties": {"status": {"enum": ["ok", "degraded", "down"]},
                                         "uptime_hours": {"type": "number", "minimum": 0, "maximum": 100000},
                                         "incidents": {"type": "integer", "minimum": 0, "maximum": 100}},
        "required": ["status", "uptime_hours", "incidents"], "additionalProperties": False}),
    ("choice", "Pick a pet.", {"anyOf": [
        {"type": "object", "properties": {"kind": {"const": "dog"}, "breed": NAME}, "required": ["kind", "breed"],
         "additionalProperties": False},
        {"type": "object", "properties": {"kind": {"const": "cat"}, "indoor": {"type": "boolean"}},
         "required": ["kind", "indoor"], "additionalProperties": False}]}),
    ("translation", "Translate 'good morning' into French and Spanish.", {
        "type": "object", "properties": {"translations": {"type": "array", "minItems": 2, "maxItems": 2, "items": {
            "type": "object", "properties": {"language": {"enum": ["French", "Spanish"]}, "text": NAME},
            "required": ["language", "text"], "additionalProperties": False}}},
        "required": ["translations"], "additionalProperties": False}),
]
