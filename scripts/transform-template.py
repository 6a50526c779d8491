#!/usr/bin/env python3
"""Prints template.yaml as the SAM transform turns it into CloudFormation (JSON).

The same translator `sam validate` and CloudFormation's transform run, offline:
local CodeUris become a placeholder S3 URI (as `sam validate` does), and no
managed policy is looked up by name (the template names none).
Usage: transform-template.py [template.yaml]
"""
import json
import os
import sys

from samcli.yamlhelper import yaml_parse
from samtranslator.translator.transform import transform


class NoManagedPolicyLookups:
    """The template must name managed policies by ARN: nothing is fetched."""

    def load(self):
        raise RuntimeError("the template names a managed policy by name; use its ARN")


def main():
    # The translator asks boto3 for a region; none is called.
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    path = sys.argv[1] if len(sys.argv) > 1 else "template.yaml"
    with open(path, encoding="utf-8") as f:
        template = yaml_parse(f.read())
    for resource in template.get("Resources", {}).values():
        if resource.get("Type") == "AWS::Serverless::Function":
            resource["Properties"]["CodeUri"] = "s3://placeholder-bucket/code.zip"
    parameters = {"AWS::Region": "us-east-1", "AWS::Partition": "aws", "AWS::AccountId": "123456789012"}
    translated = transform(template, parameters, NoManagedPolicyLookups())
    json.dump(translated, sys.stdout, indent=1, sort_keys=True, default=str)


if __name__ == "__main__":
    main()
