//! Encrypt, Decrypt, ReEncrypt, GenerateDataKey* and GenerateRandom with
//! symmetric keys.

use super::*;

impl Kms {
    pub(crate) fn encrypt_body(
        &self,
        op: &mut Op<'_>,
        req: &EncryptRequest,
    ) -> KmsResult<EncryptResponse> {
        let k = op.resolve(req.key_id.as_deref(), true)?;
        let context = req.encryption_context.clone().unwrap_or_default();
        let pt = validate::required("plaintext", &req.plaintext)?;
        validate::count("plaintext", pt.0.len(), 1, MAX_PLAINTEXT)?;
        let mut cond = context_conditions(&context);
        cond.insert(
            "kms:EncryptionAlgorithm".into(),
            json!(req.encryption_algorithm.as_deref().unwrap_or(SYMMETRIC)),
        );
        op.permit("kms:Encrypt", &k, StateRule::Use, &cond)?;
        if k.key_spec.is_rsa() && k.key_usage == KeyUsage::EncryptDecrypt {
            return self.encrypt_asymmetric(op, &k, req);
        }
        check_symmetric_encrypt(&k, "Encrypt")?;
        check_algorithm(req.encryption_algorithm.as_deref())?;
        dry_run(req.dry_run)?;
        let blob = self.encrypt_with(op, &k, &context, pt.0.expose())?;
        Ok(EncryptResponse {
            ciphertext_blob: Blob(blob),
            key_id: k.arn(),
            encryption_algorithm: SYMMETRIC.into(),
        })
    }

    pub(crate) fn encrypt_with(
        &self,
        op: &Op<'_>,
        k: &KeyRecord,
        context: &EncryptionContext,
        pt: &[u8],
    ) -> KmsResult<Vec<u8>> {
        let m = store::material(op.tx, &k.key_id, None)?
            .ok_or_else(|| KmsError::invalid_state(format!("{} is pending import.", k.arn())))?;
        let material = self.unseal_material(&k.key_id, m.version, &m.sealed)?;
        ciphertext::seal(&k.key_id, &k.arn(), m.version, &material, context, pt)
    }

    /// Resolves the key of a ciphertext blob and checks it against the
    /// optional KeyId of the request.
    pub(super) fn blob_key(
        &self,
        op: &mut Op<'_>,
        blob: &[u8],
        key_id: Option<&str>,
    ) -> KmsResult<KeyRecord> {
        let header = ciphertext::parse_header(blob)?;
        let id = header
            .key_in(&op.ctx.region)
            .ok_or_else(KmsError::invalid_ciphertext)?;
        let k = match store::get_key(op.tx, &id)? {
            Some(k) if k.region == op.ctx.region => k,
            _ => return Err(KmsError::invalid_ciphertext()),
        };
        if let Some(requested) = key_id {
            let want = op.resolve(Some(requested), true)?;
            if want.key_id != k.key_id {
                return Err(KmsError::new(
                    ErrorCode::IncorrectKeyException,
                    "The key ID in the request does not identify a CMK that can perform this operation.",
                ));
            }
        }
        op.trace.key(&k);
        Ok(k)
    }

    pub(super) fn decrypt_with(
        &self,
        op: &Op<'_>,
        k: &KeyRecord,
        blob: &[u8],
        context: &EncryptionContext,
    ) -> KmsResult<SecretBytes> {
        let header = ciphertext::parse_header(blob)?;
        let m =
            store::material(op.tx, &k.key_id, Some(header.material_version))?.ok_or_else(|| {
                if k.origin == Origin::External {
                    KmsError::invalid_state(format!("{} is pending import.", k.arn()))
                } else {
                    KmsError::invalid_ciphertext()
                }
            })?;
        let material = self.unseal_material(&k.key_id, m.version, &m.sealed)?;
        ciphertext::open(blob, &k.key_id, &k.arn(), &material, context)
    }

    pub(crate) fn decrypt_body(
        &self,
        op: &mut Op<'_>,
        req: &DecryptRequest,
    ) -> KmsResult<DecryptResponse> {
        let blob = validate::required("ciphertextBlob", &req.ciphertext_blob)?;
        validate::byte_length("ciphertextBlob", &blob.0, 0, 6144)?;
        // RSA ciphertexts are raw: a request with an RSA algorithm, or
        // naming a key while the blob is not a keyvol ciphertext, is
        // for an asymmetric key.
        let raw = req.key_id.is_some() && ciphertext::parse_header(&blob.0).is_err();
        if raw
            || req
                .encryption_algorithm
                .as_deref()
                .is_some_and(|a| a != SYMMETRIC)
        {
            return self.decrypt_asymmetric(op, req);
        }
        let k = self.blob_key(op, &blob.0, req.key_id.as_deref())?;
        let context = req.encryption_context.clone().unwrap_or_default();
        let mut cond = context_conditions(&context);
        cond.insert("kms:EncryptionAlgorithm".into(), json!(SYMMETRIC));
        op.permit("kms:Decrypt", &k, StateRule::Use, &cond)?;
        check_symmetric_encrypt(&k, "Decrypt")?;
        dry_run(req.dry_run)?;
        let pt = self.decrypt_with(op, &k, &blob.0, &context)?;
        let version = ciphertext::parse_header(&blob.0)?.material_version;
        Ok(DecryptResponse {
            key_id: k.arn(),
            plaintext: SecretBlob(pt),
            encryption_algorithm: SYMMETRIC.into(),
            key_material_id: Some(store::material_id_of(op.tx, &k, version)?),
        })
    }

    pub(crate) fn re_encrypt_body(
        &self,
        op: &mut Op<'_>,
        req: &ReEncryptRequest,
    ) -> KmsResult<ReEncryptResponse> {
        let blob = validate::required("ciphertextBlob", &req.ciphertext_blob)?;
        let src_alg = req
            .source_encryption_algorithm
            .as_deref()
            .unwrap_or(SYMMETRIC);
        let dst_alg = req
            .destination_encryption_algorithm
            .as_deref()
            .unwrap_or(SYMMETRIC);
        let sctx = req.source_encryption_context.clone().unwrap_or_default();
        let dctx = req
            .destination_encryption_context
            .clone()
            .unwrap_or_default();
        // The source: a keyvol ciphertext of a symmetric key, or raw
        // RSA-OAEP of the named asymmetric key.
        let src = if src_alg == SYMMETRIC {
            let src = self.blob_key(op, &blob.0, req.source_key_id.as_deref())?;
            op.permit(
                "kms:ReEncryptFrom",
                &src,
                StateRule::Use,
                &context_conditions(&sctx),
            )?;
            check_symmetric_encrypt(&src, "ReEncrypt")?;
            src
        } else {
            let id = req.source_key_id.as_deref().ok_or_else(|| {
                    KmsError::validation(format!(
                        "SourceKeyId is required to re-encrypt a ciphertext of SourceEncryptionAlgorithm {src_alg}: name the asymmetric KMS key that encrypted it."
                    ))
                })?;
            let src = op.resolve(Some(id), true)?;
            let mut cond = context_conditions(&sctx);
            cond.insert("kms:EncryptionAlgorithm".into(), json!(src_alg));
            op.permit("kms:ReEncryptFrom", &src, StateRule::Use, &cond)?;
            src
        };
        let dst = op.resolve(req.destination_key_id.as_deref(), true)?;
        let mut cond = context_conditions(&dctx);
        cond.insert("kms:EncryptionAlgorithm".into(), json!(dst_alg));
        op.permit("kms:ReEncryptTo", &dst, StateRule::Use, &cond)?;
        if dst.is_symmetric() {
            check_algorithm(Some(dst_alg))?;
            check_symmetric_encrypt(&dst, "ReEncrypt")?;
        } else {
            self.check_asymmetric_encrypt(&dst, dst_alg, &req.destination_encryption_context)?;
        }
        if src_alg != SYMMETRIC {
            self.check_asymmetric_encrypt(&src, src_alg, &req.source_encryption_context)?;
        }
        dry_run(req.dry_run)?;
        let pt = if src_alg == SYMMETRIC {
            self.decrypt_with(op, &src, &blob.0, &sctx)?
        } else {
            self.decrypt_raw_asymmetric(op, &src, src_alg, &blob.0)?
        };
        let out = if dst.is_symmetric() {
            self.encrypt_with(op, &dst, &dctx, pt.expose())?
        } else {
            self.encrypt_raw_asymmetric(op, &dst, dst_alg, pt.expose())?
        };
        op.trace.key(&dst);
        // Material ids exist for symmetric keys only, as in AWS.
        let material_of = |k: &KeyRecord, blob: &[u8]| {
            (k.is_symmetric())
                .then(|| ciphertext::parse_header(blob).ok())
                .flatten()
                .map(|h| store::material_id_of(op.tx, k, h.material_version))
                .transpose()
        };
        Ok(ReEncryptResponse {
            source_key_material_id: material_of(&src, &blob.0)?,
            destination_key_material_id: material_of(&dst, &out)?,
            ciphertext_blob: Blob(out),
            source_key_id: src.arn(),
            key_id: dst.arn(),
            source_encryption_algorithm: src_alg.into(),
            destination_encryption_algorithm: dst_alg.into(),
        })
    }

    pub(crate) fn generate_data_key_body(
        &self,
        op: &mut Op<'_>,
        req: &GenerateDataKeyRequest,
    ) -> KmsResult<GenerateDataKeyResponse> {
        self.generate_data_key_impl(op, req, true)
    }

    pub(crate) fn generate_data_key_without_plaintext_body(
        &self,
        op: &mut Op<'_>,
        req: &GenerateDataKeyRequest,
    ) -> KmsResult<GenerateDataKeyResponse> {
        self.generate_data_key_impl(op, req, false)
    }

    pub(super) fn generate_data_key_impl(
        &self,
        op: &mut Op<'_>,
        req: &GenerateDataKeyRequest,
        with_plaintext: bool,
    ) -> KmsResult<GenerateDataKeyResponse> {
        let (name, action) = if with_plaintext {
            ("GenerateDataKey", "kms:GenerateDataKey")
        } else {
            (
                "GenerateDataKeyWithoutPlaintext",
                "kms:GenerateDataKeyWithoutPlaintext",
            )
        };
        let len = match (req.number_of_bytes, req.key_spec.as_deref()) {
            (Some(_), Some(_)) | (None, None) => {
                return Err(KmsError::validation(
                    "Please specify either number of bytes or key spec.",
                ))
            }
            (Some(n), None) => {
                validate::range("numberOfBytes", n, 1, 1024)?;
                n as usize
            }
            (None, Some("AES_256")) => 32,
            (None, Some("AES_128")) => 16,
            (None, Some(other)) => {
                return Err(validate::not_one_of("keySpec", other, &["AES_256", "AES_128"]).into())
            }
        };
        let k = op.resolve(req.key_id.as_deref(), true)?;
        let context = req.encryption_context.clone().unwrap_or_default();
        op.permit(action, &k, StateRule::Use, &context_conditions(&context))?;
        check_symmetric_encrypt(&k, name)?;
        dry_run(req.dry_run)?;
        let dk = SecretBytes::random(len);
        let blob = self.encrypt_with(op, &k, &context, dk.expose())?;
        Ok(GenerateDataKeyResponse {
            ciphertext_blob: Blob(blob),
            plaintext: with_plaintext.then_some(SecretBlob(dk)),
            key_id: k.arn(),
        })
    }

    pub(crate) fn generate_random_body(
        &self,
        op: &mut Op<'_>,
        req: &GenerateRandomRequest,
    ) -> KmsResult<GenerateRandomResponse> {
        crate::kms::authz::authorize_account_action(op, "kms:GenerateRandom")?;
        let n = *validate::required("numberOfBytes", &req.number_of_bytes)?;
        validate::range("numberOfBytes", n, 1, 1024)?;
        if req.custom_key_store_id.is_some() {
            return Err(KmsError::new(
                ErrorCode::UnsupportedOperationException,
                "Custom key stores are not supported.",
            ));
        }
        Ok(GenerateRandomResponse {
            plaintext: SecretBlob(SecretBytes::random(n as usize)),
        })
    }
}
